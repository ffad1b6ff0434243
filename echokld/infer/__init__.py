"""Inference: trained runs restored (runs), files segmented (segment), frames read and masks
written in the input's own format (io)."""
