"""Scale-out: etcd catalog, shard sync and the stateless router (issue 14)."""
