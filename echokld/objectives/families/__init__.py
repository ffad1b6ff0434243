"""Parametric intensity families fitted by weighted maximum likelihood (objectives.mle)."""
