"""Networks: layers of the shared backbone, registered heads, the segmentation model."""
