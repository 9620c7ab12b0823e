"""Deutzia's core: CloudTrail DynamoDB data events in, audit records out, and queries over them."""
