print("pgconn_exporter")
