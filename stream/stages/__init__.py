"""The two stages' pure logic: when partials flush and scopes publish, the scope board, which
values a round publishes and how KPI updates are encoded. No Faust or Kafka client imports."""
