//! Block-device layer: registry, descriptors, channels, and the malloc, null, split, delay and error modules
