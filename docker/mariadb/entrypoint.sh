#!/bin/sh
# Initialise the data directory on first start (account + databases), then run the server in the
# foreground. The network listener only opens once initialisation is over, so a TCP connect means ready.
set -eu
DATADIR=/var/lib/mysql
if [ ! -d "$DATADIR/mysql" ]; then
  echo "selfieless-mariadb: initialising $DATADIR"
  mariadb-install-db --datadir="$DATADIR" --auth-root-authentication-method=socket --skip-test-db \
    --skip-name-resolve >/dev/null
  {
    echo "FLUSH PRIVILEGES;"
    echo "CREATE USER IF NOT EXISTS '$MARIADB_USER'@'%' IDENTIFIED BY '$MARIADB_PASSWORD';"
    for db in $MARIADB_DATABASES; do
      echo "CREATE DATABASE IF NOT EXISTS \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
      echo "GRANT ALL ON \`$db\`.* TO '$MARIADB_USER'@'%';"
    done
  } | mariadbd --datadir="$DATADIR" --bootstrap --log-warnings=0
fi
exec mariadbd --datadir="$DATADIR" --bind-address=0.0.0.0 --port=3306 --skip-name-resolve \
  --max-connections=500 --max-connect-errors=1000000000 --log-warnings=1 --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci
