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

# Healthy look-alikes ("mimics") in the synthetic ground truth
# (`ground_truth/<series>/mimic.nii.gz`, uint8, 0 = none, code = position + 1). The
# bright ones are the structures that fool hyperdensity rules and inpainting detectors
# on real CT; the dark ones (old infarct, arachnoid cyst) fool unsigned detectors.
# Evaluate attributes false-positive components to these kinds (plus "rim", the band
# next to the inner table, and "other").
MIMIC_KINDS: tuple[str, ...] = (
    "choroid_plexus",  # calcified, in the atria of the lateral ventricles
    "pineal",  # calcified pineal gland
    "falx",  # falx cerebri (and its calcified plaques)
    "tentorium",  # tentorium cerebelli
    "venous_sinus",  # superior sagittal, transverse, straight sinus: dense unclotted blood
    "basal_ganglia",  # calcification of the globus pallidus
    "skull_base",  # petrous ridges, orbital roofs, sphenoid: bone partial volume
    "beam_hardening",  # streaks across the posterior fossa
    "old_infarct",  # hypodense
    "arachnoid_cyst",  # hypodense
)
MIMIC_CODES: dict[str, int] = {name: i + 1 for i, name in enumerate(MIMIC_KINDS)}
