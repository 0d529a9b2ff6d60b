"""Config checks that run before anything is created: values and their ranges, the models a
space can build, the study identity, and every store and folder a sweep will write."""
