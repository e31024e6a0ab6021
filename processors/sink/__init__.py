"""sink: analytics topics into ClickHouse, at least once into tables that collapse replays."""
