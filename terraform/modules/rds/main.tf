# PostgreSQL 15 for Medic: private, encrypted, TLS only, 7-day point-in-time
# backups, gp3 storage autoscaling, parameter group sized to the instance.

locals {
  # Memory of the supported instance classes, for the parameter group.
  instance_memory_mib = {
    "db.t3.micro"   = 1024
    "db.t3.small"   = 2048
    "db.t3.medium"  = 4096
    "db.t3.large"   = 8192
    "db.t4g.micro"  = 1024
    "db.t4g.small"  = 2048
    "db.t4g.medium" = 4096
    "db.t4g.large"  = 8192
    "db.m6g.large"  = 8192
    "db.m6g.xlarge" = 16384
    "db.m7g.large"  = 8192
    "db.m7g.xlarge" = 16384
    "db.r6g.large"  = 16384
    "db.r6g.xlarge" = 32768
    "db.r7g.large"  = 16384
    "db.r7g.xlarge" = 32768
  }
  memory_mib = lookup(local.instance_memory_mib, var.instance_class, 0)

  # shared_buffers: 25 % of memory, in 8 kB pages.
  shared_buffers_pages = floor(local.memory_mib * 1024 / 8 / 4)
  # effective_cache_size: 75 % of memory, in 8 kB pages.
  effective_cache_size_pages = floor(local.memory_mib * 1024 / 8 * 3 / 4)
  # max_connections: the RDS default formula (memory / 9531392 bytes),
  # at least 100 and at most 5000. Medic needs about pool size x pods.
  max_connections = min(5000, max(100, floor(local.memory_mib * 1048576 / 9531392)))
  # maintenance_work_mem: memory / 16, in kB, at most 2 GiB.
  maintenance_work_mem_kb = min(2097152, floor(local.memory_mib * 1024 / 16))
}

resource "aws_db_subnet_group" "this" {
  name        = var.name
  description = "Medic PostgreSQL (${var.name}) private subnets"
  subnet_ids  = var.subnet_ids
}

resource "aws_security_group" "this" {
  name        = "${var.name}-postgres"
  description = "Medic PostgreSQL: 5432 from the EKS nodes only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "from_eks_nodes" {
  security_group_id            = aws_security_group.this.id
  description                  = "PostgreSQL from the EKS node security group"
  referenced_security_group_id = var.allowed_security_group_id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_db_parameter_group" "this" {
  name        = "${var.name}-postgres15"
  family      = "postgres15"
  description = "Medic PostgreSQL 15 tuned for ${var.instance_class}"

  parameter {
    name         = "shared_buffers"
    value        = tostring(local.shared_buffers_pages)
    apply_method = "pending-reboot"
  }

  parameter {
    name         = "max_connections"
    value        = tostring(local.max_connections)
    apply_method = "pending-reboot"
  }

  parameter {
    name  = "effective_cache_size"
    value = tostring(local.effective_cache_size_pages)
  }

  parameter {
    name  = "maintenance_work_mem"
    value = tostring(local.maintenance_work_mem_kb)
  }

  # Clients must use TLS (DATABASE_URL carries sslmode=require).
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  # Query logging: slow statements and schema changes.
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = local.memory_mib > 0
      error_message = "Unknown instance class ${var.instance_class}: add its memory to local.instance_memory_mib."
    }
  }
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name               = "${var.name}-rds-monitoring"
  description        = "Enhanced monitoring for ${var.name}"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

data "aws_partition" "current" {}

resource "aws_db_instance" "this" {
  #checkov:skip=CKV_AWS_157:Multi-AZ is a variable: prod sets it, dev runs single-AZ to halve the cost of a disposable database.
  #checkov:skip=CKV_AWS_293:Deletion protection is a variable (default true); only dev, and the offline moto test, turn it off.
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class

  db_name             = var.database_name
  username            = var.master_username
  password_wo         = var.master_password
  password_wo_version = var.master_password_version

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.this.id]
  parameter_group_name   = aws_db_parameter_group.this.name
  publicly_accessible    = false

  storage_type          = "gp3"
  allocated_storage     = var.allocated_storage_gb
  max_allocated_storage = var.max_allocated_storage_gb
  storage_encrypted     = true
  kms_key_id            = var.kms_key_arn

  multi_az            = var.multi_az
  deletion_protection = var.deletion_protection

  backup_retention_period   = var.backup_retention_days
  backup_window             = "03:00-04:00"
  maintenance_window        = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot     = true
  delete_automated_backups  = false
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-final"

  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = var.kms_key_arn
  performance_insights_retention_period = 7

  monitoring_interval = 60
  monitoring_role_arn = aws_iam_role.monitoring.arn

  depends_on = [aws_iam_role_policy_attachment.monitoring]
}
