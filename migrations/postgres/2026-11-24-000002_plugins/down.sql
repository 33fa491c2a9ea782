DROP TABLE plugin_enablements;
DROP TABLE plugins;
DROP TABLE plugin_versions;
