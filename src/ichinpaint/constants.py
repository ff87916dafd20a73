"""Names and numbers shared by every stage: the RSNA label order and the brain window."""

# RSNA Intracranial Hemorrhage Detection: six label rows per image, always in this order.
SUBTYPES: tuple[str, ...] = (
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
)
LABELS: tuple[str, ...] = SUBTYPES + ("any",)

# Lesion-mask voxel values used by the synthetic ground truth: 0 = no lesion,
# 1..5 = SUBTYPES in order.
SUBTYPE_CODES: dict[str, int] = {name: i + 1 for i, name in enumerate(SUBTYPES)}

# Brain window of the original study (HU).
BRAIN_WINDOW_CENTER: float = 40.0
BRAIN_WINDOW_WIDTH: float = 80.0
