"""SimMIM students (``ViTForMaskedImageModeling``, ``SwinForMaskedImageModeling``) with GPA or random masks.

``masking`` draws the masks on SimMIM's mask-patch grid from GPA scores; ``trainer`` holds the masker, its teachers
and `SimMIMTrainer`.
"""
