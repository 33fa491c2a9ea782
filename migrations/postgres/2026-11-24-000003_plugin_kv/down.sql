DROP TABLE plugin_kv;
