"""The one adversarial training engine every model family runs on."""
