FROM python:3.11-slim-bookworm
# gcc, libldap2-dev and libsasl2-dev: pip builds python-ldap (LDAP logins) from source.
RUN apt-get update && apt-get install -y --no-install-recommends openssh-client gcc libldap2-dev libsasl2-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
EXPOSE 8000
