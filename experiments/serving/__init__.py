"""What happens to a trained model after the sweep: exports, predictors, image decoding
for prediction.
"""
