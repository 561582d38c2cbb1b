"""Tools around a model, none needed to train it: analytic FLOPs (``flops``), memory per distributed engine
(``memory``, ``python -m modeling_gpa.tools.memory``), timm weight conversion (``convert``,
``python -m modeling_gpa.tools.convert``) and figures of GPA scores and masks (``visualization``)."""
