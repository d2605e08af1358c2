"""Template task (see scope_template_example.yaml); a package only so that wheels ship utils.py."""
