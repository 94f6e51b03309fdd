"""Print 'N passed, N failed, N skipped' for the last stestr run."""

import re
import subprocess
import sys

env = sys.argv[1]
out = subprocess.run([env + '/bin/stestr', 'last'], capture_output=True,
                     text=True).stdout
counts = dict(re.findall(r'^ - (Passed|Failed|Skipped): (\d+)', out,
                         re.MULTILINE))
print('unit: %s passed, %s failed, %s skipped' % (
    counts.get('Passed', 0), counts.get('Failed', 0),
    counts.get('Skipped', 0)))
