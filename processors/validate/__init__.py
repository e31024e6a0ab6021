"""validate: raw records checked against their data contract into typed Avro, or dead-lettered."""
