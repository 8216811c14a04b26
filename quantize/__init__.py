"""Keras MobileNet (the seed network), CIFAR-10 data, training, int8 conversion and the
bit-exact numpy int8 reference of every TFLite op the accelerator runs."""
