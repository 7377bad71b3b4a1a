"""The Policy panel (issue 10): checkpoint chooser, autonomy controls, live plots, evaluation."""
