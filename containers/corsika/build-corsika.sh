#!/bin/sh
# Build one CORSIKA 7 configuration from its source tarball into /opt/corsika (esap-prefect's
# CONCORDIA images). The source's `coconut` is called with the batch interface below; the
# executable it makes in run/ is installed as /opt/corsika/bin/<name>, with the build options.
# usage: build-corsika.sh SOURCE.tar.gz EXECUTABLE HE LE OPTIONS (comma-separated, may be empty)
set -eu
source=$1 executable=$2 he=$3 le=$4 options=$5
mkdir -p /opt/corsika/src /opt/corsika/bin
tar -xzf "$source" -C /opt/corsika/src --strip-components=1 --no-same-owner
cd /opt/corsika/src
./coconut --he "$he" --le "$le" --options "$options" --executable "$executable"
[ -x "run/$executable" ] || { echo "build-corsika: coconut made no run/$executable" >&2; exit 1; }
mkdir -p /opt/corsika/run && cp -a run/. /opt/corsika/run/
for made in /opt/corsika/run/"$executable"*; do ln -s "$made" /opt/corsika/bin/; done
cd / && rm -rf /opt/corsika/src
