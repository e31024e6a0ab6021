"""The meter processor's parts: pricing a result, the windowed and budget state, the faust app.

``usage`` and ``state`` are pure (unit tests call them without Kafka); ``app``
wires them into faust-streaming; ``kafka_io`` adapts faust to Sluice's Avro
contracts and to read-committed consumption; ``connection`` maps Sluice's
Kafka settings (security included) onto faust's broker options; ``settings``
is meter's own configuration (``SLUICE_METER__*``); ``processor`` declares it.
"""
