"""Tools around the model: the GPA explorer (and, as the package settles, flops, memory, conversion, figures).

Nothing is imported here, so ``import modeling_gpa.tools`` costs nothing and never pulls in gradio.
"""
