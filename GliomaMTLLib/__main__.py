from GliomaMTLLib.cli import main
import sys
sys.exit(main())
