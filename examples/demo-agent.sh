#!/bin/sh
# A scripted stand-in for an AI coding agent: it runs a few allowed tools and tries some denied ones.
echo "agent: listing the workspace"; ls / >/dev/null
echo "agent: checking versions"; uname -r >/dev/null
echo "agent: trying to download with wget (denied by path)"; wget --version >/dev/null 2>&1; echo "  -> status $?"
cp /usr/bin/id /tmp/bridle-demo-id 2>/dev/null
echo "agent: running a copy of id from /tmp (denied by dir)"; /tmp/bridle-demo-id >/dev/null 2>&1; echo "  -> status $?"
rm -f /tmp/bridle-demo-id
echo "agent: force-pushing (denied by argv)"; git push --force origin main >/dev/null 2>&1; echo "  -> status $?"
echo "agent: reading /etc/shadow (denied by credentials.files.deny)"; cat /etc/shadow >/dev/null 2>&1; echo "  -> status $?"
echo "agent: a subshell that runs date"; (sh -c 'date >/dev/null')
echo "agent: done"
