package clickhouse

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
)

// configTemplate is a minimal server configuration. The root element <yandex> is what 18.16
// expects; later releases still accept it. No interserver_http_port, remote_servers, ZooKeeper or
// graphite sections: nothing listens beyond the two ports, and only on 127.0.0.1.
var configTemplate = template.Must(template.New("config").Parse(`<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{{.Dir}}/log/clickhouse-server.log</log>
        <errorlog>{{.Dir}}/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>{{.Host}}</listen_host>
    <tcp_port>{{.TCPPort}}</tcp_port>
    <http_port>{{.HTTPPort}}</http_port>
    <path>{{.Dir}}/data/</path>
    <tmp_path>{{.Dir}}/tmp/</tmp_path>
    <user_files_path>{{.Dir}}/user_files/</user_files_path>
    <format_schema_path>{{.Dir}}/format_schemas/</format_schema_path>
    <users_config>{{.Dir}}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_connections>1024</max_connections>
    <max_concurrent_queries>100</max_concurrent_queries>
    <keep_alive_timeout>3</keep_alive_timeout>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mlock_executable>false</mlock_executable>
    <shutdown_wait_unfinished>2</shutdown_wait_unfinished>
</yandex>
`))

const usersXML = `<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <!-- An idle connection notices a shutdown only when its poll times out (10 s by
                 default), which made every graceful stop take 10 s while a client was connected. -->
            <poll_interval>1</poll_interval>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default></default>
    </quotas>
</yandex>
`

// writeConfig creates the directory layout and writes config.xml and users.xml, returning the
// path of config.xml. It is rewritten at every start, so a changed port takes effect.
func writeConfig(o Options) (string, error) {
	for _, sub := range []string{"data", "tmp", "user_files", "format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, sub), 0o755); err != nil {
			return "", fmt.Errorf("create clickhouse directory: %w", err)
		}
	}
	var escapedDir bytes.Buffer
	if err := xml.EscapeText(&escapedDir, []byte(o.Dir)); err != nil {
		return "", fmt.Errorf("escape %s: %w", o.Dir, err)
	}
	var cfg bytes.Buffer
	err := configTemplate.Execute(&cfg, struct {
		Dir               string
		Host              string
		TCPPort, HTTPPort int
	}{escapedDir.String(), host, o.TCPPort, o.HTTPPort})
	if err != nil {
		return "", fmt.Errorf("render clickhouse config: %w", err)
	}
	configPath := filepath.Join(o.Dir, "config.xml")
	if err := os.WriteFile(configPath, cfg.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("write clickhouse config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(o.Dir, "users.xml"), []byte(usersXML), 0o644); err != nil {
		return "", fmt.Errorf("write clickhouse users: %w", err)
	}
	return configPath, nil
}
