"""Tools around a model, none needed to train it: analytic FLOPs (``flops``), memory per distributed engine
(``memory``, ``python -m modeling_gpa.tools.memory``), timm weight conversion (``convert``,
``python -m modeling_gpa.tools.convert``), our weights in mmsegmentation's MAE backbone (``mmseg_loading``), figures
of GPA scores and masks (``visualization``) and the GPA explorer (``explorer``: its logic; ``explorer_app``: its
endpoints; ``explorer_page``: its Gradio page, the only module that imports gradio, and none of torch)."""
