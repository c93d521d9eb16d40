"""Losses the field's libraries lack: adversarial objectives, gradient penalty, shape consistency."""
