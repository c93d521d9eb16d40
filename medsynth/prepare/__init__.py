"""``medsynth prepare``: raw MR/CT exports -> bias-corrected, registered, masked training pairs (SPEC §8).

The service is :func:`medsynth.prepare.service.prepare`; the image steps live in ``steps``, one case's
pipeline in ``case``, raw-layout discovery in ``sources`` and the table, JSON and PNGs in ``report``.
"""
