"""ichinpaint: label-free intracranial hemorrhage detection by diffusion inpainting."""

__version__ = "0.1.0"
