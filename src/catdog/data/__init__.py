"""Images: finding labelled ones, decoding, the prepared splits, tensors, the embedded dataset."""
