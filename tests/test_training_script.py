"""What run_pretrain.py and run_mim.py share around training: the one-line error of a DataLoader worker."""

from modeling_gpa.training.script import one_line


def test_one_line_keeps_the_last_line_of_a_worker_traceback():
    error = ValueError("Caught ValueError in DataLoader worker process 0.\nTraceback ...\nValueError: bad image a.png")
    assert one_line(error) == "bad image a.png"
    assert one_line(OSError("no such file")) == "no such file"
