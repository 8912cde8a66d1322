"""Starting workers: in this process, as local processes, or under torchrun."""
