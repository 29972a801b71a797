output "address" {
  description = "Host name of the database (pg_host)."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "Port of the database (pg_port)."
  value       = aws_db_instance.this.port
}

output "database" {
  description = "Database name (pg_database)."
  value       = aws_db_instance.this.db_name
}

output "username" {
  description = "Master user name (pg_user)."
  value       = aws_db_instance.this.username
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret holding the master credentials (JSON with username and password)."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "security_group_id" {
  description = "The database's security group."
  value       = aws_security_group.db.id
}
