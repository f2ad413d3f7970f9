# The stack's database: MariaDB from Debian packages (container `selfieless-db`; no `acts` in it).
#   scripts/docker-prepare builds it offline from selfieless/mariadb-base:bookworm (debootstrap with
#   mariadb-server already in it); with a registry the default base installs the package here.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN if ! command -v mariadbd >/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mariadb-server \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && rm -rf /var/lib/mysql /etc/mysql/mariadb.conf.d/50-server.cnf \
 && mkdir -p /var/lib/mysql /run/mysqld \
 && chown mysql:mysql /var/lib/mysql /run/mysqld
COPY docker/mariadb/entrypoint.sh /usr/local/bin/selfieless-mariadb
# Account and databases created on first start (empty data directory / volume).
ENV MARIADB_USER=selfieless MARIADB_PASSWORD=selfieless MARIADB_DATABASES="acts users"
USER mysql
VOLUME /var/lib/mysql
EXPOSE 3306
HEALTHCHECK --interval=3s --timeout=2s --start-period=60s --retries=3 CMD ["mariadb-admin", "--protocol=socket", "ping"]
CMD ["sh", "/usr/local/bin/selfieless-mariadb"]
