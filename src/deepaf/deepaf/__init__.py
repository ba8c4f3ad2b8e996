"""DeepAf bringup: the node graph, environment defaults and the `deepaf` command line."""
