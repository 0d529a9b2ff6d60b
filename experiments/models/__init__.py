"""Model builders (CNN, branched, transfer on keras.applications backbones), chosen by
`model.name`; every model takes raw [0, 255] pixels and rescales inside itself.
"""
