"""What makes many nodes one service: routing to users and rooms on any node, cluster
membership and its directory, and holding messages while no Redis node is up."""
