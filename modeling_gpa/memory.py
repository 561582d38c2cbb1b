"""``python -m modeling_gpa.memory``: the documented command that prints the model state per GPU for each engine;
the code is in ``modeling_gpa.tools.memory``."""

from modeling_gpa.tools.memory import memory_table

if __name__ == "__main__":
    print(memory_table())
