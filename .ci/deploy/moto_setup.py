#!/usr/bin/env python3
"""Create, in a running moto_server, what Medic's Terraform expects to exist
already (VPC, two private subnets, the EKS node security group, the EKS
cluster and its IAM OIDC provider), then print the matching tfvars as JSON.

usage: moto_setup.py ENDPOINT ENVIRONMENT > test.auto.tfvars.json
"""
import json
import sys

import boto3

endpoint, env = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="test", aws_secret_access_key="test")
ec2 = boto3.client("ec2", **kw)
eks = boto3.client("eks", **kw)
iam = boto3.client("iam", **kw)
sts = boto3.client("sts", **kw)

cidr = {"dev": "10.10", "prod": "10.20"}[env]
vpc = ec2.create_vpc(CidrBlock=f"{cidr}.0.0/16")["Vpc"]["VpcId"]
subnets = [
    ec2.create_subnet(VpcId=vpc, CidrBlock=f"{cidr}.{i}.0/24", AvailabilityZone=az)["Subnet"]["SubnetId"]
    for i, az in enumerate(["us-east-1a", "us-east-1b"], start=1)
]
node_sg = ec2.create_security_group(
    GroupName=f"eks-nodes-{env}", Description="EKS nodes", VpcId=vpc)["GroupId"]
role = iam.create_role(
    RoleName=f"eks-cluster-{env}",
    AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "eks.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
)["Role"]["Arn"]
cluster = eks.create_cluster(
    name=f"medic-{env}", roleArn=role,
    resourcesVpcConfig={"subnetIds": subnets, "securityGroupIds": [node_sg]},
)["cluster"]
issuer = cluster["identity"]["oidc"]["issuer"]
try:
    iam.create_open_id_connect_provider(
        Url=issuer, ClientIDList=["sts.amazonaws.com"], ThumbprintList=["9e99a48a9960b14926bb7f3b02e22da2b0ab7280"])
except iam.exceptions.EntityAlreadyExistsException:
    pass  # moto gives every cluster of one server the same issuer

# moto's replication groups have no member clusters, while the AWS provider
# reads them (<group>-001, -002) after creating the group: create them here.
elasticache = boto3.client("elasticache", **kw)
for member in ("001", "002"):
    elasticache.create_cache_cluster(
        CacheClusterId=f"medic-{env}-{member}", Engine="redis", EngineVersion="7.1",
        CacheNodeType="cache.t3.micro", NumCacheNodes=1)

print(json.dumps({
    "aws_account_id": sts.get_caller_identity()["Account"],
    "vpc_id": vpc,
    "private_subnet_ids": subnets,
    "eks_cluster_name": f"medic-{env}",
    "eks_node_security_group_id": node_sg,
    # A test run must be able to destroy what it created.
    "rds_deletion_protection": False,
    "secret_recovery_window_in_days": 0,
}, indent=2))
