"""The review app: look at a whole CT series under the thresholding choices evaluation offers.

- `data`: which outputs exist, loading a series, the post-processing chain and the
  counts (all through ``ichinpaint.evaluation``, never a second implementation);
- `params`: reading params.yaml and saving the chosen ``evaluate`` keys into it;
- `view`: the slice composite (CT, anomaly colours, outlines) and the score strip;
- `streamlit_app.py`: the page (``ichinpaint app`` serves it).
"""
