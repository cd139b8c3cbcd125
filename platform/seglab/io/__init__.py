"""Reading and writing images, label maps, colour-coded labels and dataset folders."""
