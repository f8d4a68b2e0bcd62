"""python -m presencectl"""

from presencectl.cli import run

if __name__ == "__main__":
    run()
