from setuptools import find_packages, setup

setup(
    name='circus-plugins',
    version='0.1.0',
    description='Dependable, fast plugins for the Circus process manager',
    packages=find_packages(include=['circus_plugins', 'circus_plugins.*']),
    python_requires='>=3.9',
    install_requires=['pyzmq', 'tornado', 'iowait'],
    extras_require={
        'redis': ['redis>=4.2'],
        'alerts': ['aiosmtplib>=3'],
        'prometheus': ['prometheus_client>=0.20', 'psutil'],
        'autoscale': ['psutil'],
        'test': ['pytest', 'hypothesis', 'circus==0.19.0', 'psutil', 'redis>=4.2',
                 'aiosmtplib>=3', 'aiosmtpd', 'trustme', 'prometheus_client>=0.20'],
        'docs': ['sphinx'],
    },
    entry_points={'console_scripts': ['circus-plugin = circus_plugins.cli:main']},
)
