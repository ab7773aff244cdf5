import sys

from regsosek_tools.calibration.calibrate import main

sys.exit(main())
