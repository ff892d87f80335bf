"""``livemig hosts``: provision, validate and collect real KVM hosts with Ansible playbooks
(``vagrant/ansible/``) run through ansible-runner."""
