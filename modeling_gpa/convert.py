"""``python -m modeling_gpa.convert``: the documented command for timm weights both ways; the code is in
``modeling_gpa.tools.convert``."""

from modeling_gpa.tools.convert import main

if __name__ == "__main__":
    main()
