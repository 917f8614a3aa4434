"""Using a trained model: image decoding shared with the folder loader, and predictions on image files."""
