"""Batch jobs over history: reference profiles and contract checks (``sluice batch``).

Two engines compute the same profile: ``pandas_engine`` (also what the ``cudf``
engine runs, under ``cudf.pandas``) and ``spark_engine`` (PySpark, reading Kafka
through the spark-sql-kafka jars). The parts where they could disagree (quantile
ranks, category ranking, the contract check) are shared code.
"""
