"""The KPI logic: events, decoding, time, windows, the outlet/lead/activity books, the engine and
the KPI definitions. Pure and deterministic: no Faust, Kafka or clock imports; time is passed in."""
