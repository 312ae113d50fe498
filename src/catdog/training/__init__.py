"""The training loop, a frozen backbone's cached features, and training in several processes."""
