#!/usr/bin/env python3
"""moto_server with the ElastiCache behaviour Medic's Terraform test needs.

moto keeps a deleted replication group in status "deleting" forever, never
creates its member clusters and has no DeleteCacheSubnetGroup, while the AWS
provider waits for the group to disappear on destroy, reads the members after
create and deletes the subnet group. This wrapper makes DeleteReplicationGroup
remove the group and its members and adds DeleteCacheSubnetGroup;
moto_setup.py creates the members. Everything else is stock moto.

usage: moto_server.py -H 127.0.0.1 -p PORT
"""
import sys

from moto.core.responses import EmptyResult
from moto.elasticache.models import ElastiCacheBackend
from moto.elasticache.responses import ElastiCacheResponse
from moto.server import main

_delete = ElastiCacheBackend.delete_replication_group


def delete_replication_group(self, replication_group_id, retain_primary_cluster):
    group = _delete(self, replication_group_id, retain_primary_cluster)
    self.replication_groups.pop(replication_group_id, None)
    for cluster_id in [c for c in self.cache_clusters if c.startswith(f"{replication_group_id}-")]:
        self.cache_clusters.pop(cluster_id, None)
    return group


def delete_cache_subnet_group(self):
    self.elasticache_backend.cache_subnet_groups.pop(self._get_param("CacheSubnetGroupName"), None)
    return EmptyResult()


ElastiCacheBackend.delete_replication_group = delete_replication_group
ElastiCacheResponse.delete_cache_subnet_group = delete_cache_subnet_group

if __name__ == "__main__":
    sys.exit(main())
