"""Camera ingestion, ROS-free: image conversion, crop/resize, multi-camera synchronisation."""
